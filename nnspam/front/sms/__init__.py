"""SMS down the same path as email.

An SMS (from Twilio's webhook or poller) becomes an RFC 822 message
(:mod:`nnspam.front.sms.message`), is delivered into the SMS maildir by the maildir
protocol and filed by the email daemon's :class:`nnspam.services.delivery.sorter.Sorter` with
the SMS model (:mod:`nnspam.front.sms.store`). :mod:`nnspam.front.sms.webhook` (Flask) and
:mod:`nnspam.front.sms.poller` (twilio) are the two ways SMS arrive; they import
their libraries themselves, so nothing here costs the filter path anything.
"""
