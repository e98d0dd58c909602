"""HTTP: the client and scheduler for OpenAI-compatible servers (lceval.http.client)."""
