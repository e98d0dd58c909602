"""Every metric, one implementation each: text matching and ROUGE (text), LongBench's and InfiniteBench's
official scorers (longbench, infinitebench)."""
