"""Layer ``model``: a trained filter, its files, and how it learns from one message.

The model (word list + network + wide path + ham bias -> spamicity;
:mod:`~nnspam.model.core`), the one writer of a model directory
(:mod:`~nnspam.model.writer`), adaptive input words (:mod:`~nnspam.model.adaptive`),
the wide path of hashed tokens (:mod:`~nnspam.model.wide`) and the one correction
routine every front uses (:mod:`~nnspam.model.correct`).
"""
