# IMAPSieve: the user moved a message into Junk: learn it as spam.
# Dovecot runs this (imap_sieve plugin) with the settings shown in
# docs/guides/pipe-filter.md (imapsieve_mailbox1_name = Junk, causes = COPY APPEND).
# nnspam-learn (in sieve_pipe_bin_dir) trains the user's model on it.
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.user" "*" {
    set "username" "${1}";
}

pipe :copy "nnspam-learn" ["--spam", "${username}"];
