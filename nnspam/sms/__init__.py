"""SMS down the same path as email.

An SMS (from Twilio's webhook or poller) becomes an RFC 822 message
(:mod:`nnspam.sms.message`), is delivered into the SMS maildir by the maildir
protocol and filed by the email daemon's :class:`nnspam.sorter.Sorter` with
the SMS model (:mod:`nnspam.sms.store`). :mod:`nnspam.sms.webhook` (Flask) and
:mod:`nnspam.sms.poller` (twilio) are the two ways SMS arrive; they import
their libraries themselves, so nothing here costs the filter path anything.
"""
