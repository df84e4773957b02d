"""Delivery: where mail meets a model on this host - the sorter, the daemon that
runs it, the pipe filter and its client of the scoring server (spamc), IMAP sorting,
and their state. Imports nothing, so importing one module loads no other."""
