"""Layer ``mail``: bytes -> message -> tokens, and the files mail lives in.

Raw bytes and MIME (:mod:`~nnspam.mail.message`), the tokenizer
(:mod:`~nnspam.mail.tokens`), header insertion that keeps the body byte for byte
(:mod:`~nnspam.mail.headers`), maildir delivery and moves (:mod:`~nnspam.mail.maildir`),
atomic file writes (:mod:`~nnspam.mail.atomic`) and corpus readers
(:mod:`~nnspam.mail.corpus`). Imports nothing above ``nnspam.config``.
"""
