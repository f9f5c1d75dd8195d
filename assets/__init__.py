"""One module per stage of the TPT graph; each builds its assets for one experiment."""
