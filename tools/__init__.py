"""Developer tools (documentation generators and the like); nothing here runs in the services."""
