"""Code shared by the workers, the training job and the command line."""
