"""The dashboard (email and SMS): login, lists, message view, the user's moves.

:mod:`~nnspam.front.dashboard.web` is access control (login, server-side sessions,
CSRF) and the Flask app, :mod:`~nnspam.front.dashboard.sms_pages` and
:mod:`~nnspam.front.dashboard.email_pages` the pages, :mod:`~nnspam.front.dashboard.moves`
the one way both move a message into or out of Junk, :mod:`~nnspam.front.dashboard.email_side`
the daemon's state and maildirs as the email pages read them and
:mod:`~nnspam.front.dashboard.plot` the day-by-day plot. Served by ``nnspam sms serve``
(with the Twilio webhook) and ``nnspam dashboard`` (without).
"""
