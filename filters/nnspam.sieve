# nnspam for Dovecot LDA/LMTP (Pigeonhole Sieve, vnd.dovecot.filter):
# pass every message through nnspam filter, file spam into Junk.
#
# Install (see docs/guides/pipe-filter.md "Pipe filter"): put filters/nnspam-filter into the
# sieve_filter_bin_dir (e.g. /usr/lib/dovecot/sieve-filter/), enable the
# extension in the Dovecot config,
#   plugin {
#     sieve_plugins = sieve_extprograms
#     sieve_global_extensions = +vnd.dovecot.filter
#     sieve_filter_bin_dir = /usr/lib/dovecot/sieve-filter
#   }
# and use this as (or include it from) the user's or the global before-script.
#
# If the filter program fails, this script fails and Dovecot falls back to
# the implicit keep: the original message is delivered to INBOX.
require ["vnd.dovecot.filter", "fileinto", "mailbox"];

filter "nnspam-filter";

# nnspam removes any X-NNSpam-Flag a sender forged before adding its own.
if header :is "X-NNSpam-Flag" "YES" {
    fileinto :create "Junk";
    stop;
}
# With an unsure band in the config (filter.unsure: [low, high]), mail nnspam is
# not sure of says "X-NNSpam-Status: Unsure" (and has no flag): file it apart.
# Without a band this never matches.
if header :matches "X-NNSpam-Status" "Unsure,*" {
    fileinto :create "Unsure";
    stop;
}
