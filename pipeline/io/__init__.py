"""Reading input shards and writing WebDataset output shards (local files)."""
