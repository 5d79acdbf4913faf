"""The batch data plane: raw corpora -> input shards -> rendered WebDataset shards."""
