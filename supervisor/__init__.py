"""corral's composition root: the daemon, the Engine and the command line."""
