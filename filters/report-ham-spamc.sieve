# IMAPSieve: the user moved a message out of Junk: learn it as ham, unless it
# went to the Trash (deleting spam is not a verdict that it is ham).
# Dovecot runs this (imap_sieve plugin) with the settings shown in
# docs/guides/pipe-filter.md (imapsieve_mailbox2_name = *, imapsieve_mailbox2_from = Junk,
# causes = COPY). nnspam-learn-spamc (in sieve_pipe_bin_dir) tells
# nnspam serve (spamc -L ham -u USER) to learn it.
# Install: put filters/nnspam-learn-spamc into sieve_pipe_bin_dir (and its
# nnspam-learn-spamc.conf with SPAMC_FLAGS if the server is not on
# /run/nnspam/nnspam.sock), this script beside the Dovecot config, and name it
# in imapsieve_mailbox2_before (docs/guides/pipe-filter.md "With the scoring server").
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.mailbox" "*" {
    set "mailbox" "${1}";
}
if string "${mailbox}" "Trash" {
    stop;
}

if environment :matches "imap.user" "*" {
    set "username" "${1}";
}

pipe :copy "nnspam-learn-spamc" ["--ham", "${username}"];
