"""Weight sync from learner rank 0 to the engines: the protocol (`protocol`) and its transports (`broadcast`)."""
