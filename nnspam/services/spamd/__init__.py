"""The scoring server (nnspam serve): its protocol (SPAMD/1.5), listeners and
server process. Imports nothing, so importing one module loads no other."""
