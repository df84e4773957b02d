# IMAPSieve: the user moved a message out of Junk: learn it as ham, unless it
# went to the Trash (deleting spam is not a verdict that it is ham).
# Dovecot runs this (imap_sieve plugin) with the settings shown in
# docs/guides/pipe-filter.md (imapsieve_mailbox2_name = *, imapsieve_mailbox2_from = Junk,
# causes = COPY). nnspam-learn (in sieve_pipe_bin_dir) trains the user's model.
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

pipe :copy "nnspam-learn" ["--ham", "${username}"];
