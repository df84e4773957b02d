"""Layer ``front``: what a user runs, the ``nnspam`` command line, the SMS side and the
dashboard.

:mod:`~nnspam.front.cli` parses the command line and dispatches to the commands;
:mod:`nnspam.front.sms` turns SMS into mail for the same path; :mod:`nnspam.front.dashboard`
is the web dashboard of both (``nnspam sms serve``, ``nnspam dashboard``). Nothing imports
this layer but ``python -m nnspam``.
"""
