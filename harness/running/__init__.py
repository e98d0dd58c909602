"""Running: settings, the runner, named models' files, costs and what a manifest records about the machine."""
