#!/usr/bin/perl
# SpamAssassin's Bayes classifier alone, for scripts/bench/compare.py.
#
# One Perl process loads Mail::SpamAssassin once with a private configuration:
# only the Bayes plugin and one rule that calls it, network tests off, no
# auto-learning, the database in DIR (never ~/.spamassassin). Reads lines from
# standard input and answers on standard output, one line per input line:
#
#   train spam|ham FILE   -> "ok"              (sa-learn --spam/--ham of FILE)
#   score FILE            -> "<probability>"   (Bayes probability; 0.5 while the
#                                               database has < 200 spam or ham)
#   sync                  -> "ok"              (write learned tokens out)
#
# Usage: perl sa_bayes.pl DIR
use strict;
use warnings;
use Mail::SpamAssassin;

my $dir = shift or die "usage: $0 DIR\n";

sub slurp {
    my ($path) = @_;
    open(my $fh, '<:raw', $path) or die "$path: $!\n";
    local $/;
    my $text = <$fh>;
    close $fh;
    return $text;
}

my $config = <<"CF";
loadplugin Mail::SpamAssassin::Plugin::Check
loadplugin Mail::SpamAssassin::Plugin::Bayes
use_bayes 1
use_bayes_rules 1
bayes_auto_learn 0
bayes_path $dir/bayes
bayes_learn_to_journal 0
lock_method flock
skip_rbl_checks 1
dns_available no
body NNSPAM_CMP_BAYES eval:check_bayes('0.00', '1.01')
score NNSPAM_CMP_BAYES 0.001
CF
# SpamAssassin's own data that the Bayes tokenizer uses: the top-level domain
# list (to find registrar boundaries in URIs) and the Bayes stop words.
for my $cf (qw(20_aux_tlds.cf 60_bayes_stopwords.cf)) {
    my $path = "/usr/share/spamassassin/$cf";
    $config .= slurp($path) . "\n" if -r $path;
}

my $sa = Mail::SpamAssassin->new({
    config_text => $config,
    local_tests_only => 1,
    dont_copy_prefs => 1,
    userstate_dir => $dir,
    home_dir_for_helpers => $dir,
});
$sa->init(1);
$| = 1;


while (my $line = <STDIN>) {
    chomp $line;
    my ($cmd, @args) = split / /, $line, 3;
    if ($cmd eq 'train') {
        my ($label, $path) = @args;
        my $mail = $sa->parse(slurp($path));
        $sa->learn($mail, undef, $label eq 'spam' ? 1 : 0, 0);
        $mail->finish();
        print "ok\n";
    } elsif ($cmd eq 'score') {
        my $mail = $sa->parse(slurp($args[0]));
        my $status = $sa->check($mail);
        my $p = $status->{bayes_score};
        $p = $status->get_tag('BAYES') unless defined $p;
        $p = 0.5 unless defined $p && $p ne '';
        print "$p\n";
        $status->finish();
        $mail->finish();
    } elsif ($cmd eq 'sync') {
        $sa->finish_learner();
        $sa->rebuild_learner_caches();
        print "ok\n";
    } else {
        die "unknown command: $cmd\n";
    }
}
$sa->finish_learner();
