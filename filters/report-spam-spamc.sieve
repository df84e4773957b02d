# IMAPSieve: the user moved a message into Junk: learn it as spam.
# Dovecot runs this (imap_sieve plugin) with the settings shown in
# docs/guides/pipe-filter.md (imapsieve_mailbox1_name = Junk, causes = COPY APPEND).
# nnspam-learn-spamc (in sieve_pipe_bin_dir) tells nnspam serve
# (spamc -L spam -u USER) to learn it.
# Install: put filters/nnspam-learn-spamc into sieve_pipe_bin_dir (and its
# nnspam-learn-spamc.conf with SPAMC_FLAGS if the server is not on
# /run/nnspam/nnspam.sock), this script beside the Dovecot config, and name it
# in imapsieve_mailbox1_before (docs/guides/pipe-filter.md "With the scoring server").
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.user" "*" {
    set "username" "${1}";
}

pipe :copy "nnspam-learn-spamc" ["--spam", "${username}"];
