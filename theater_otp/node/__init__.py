"""The node process: the root of the tree, the router, the control socket."""
