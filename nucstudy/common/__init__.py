"""Helpers every layer may use: atomic file writes (:mod:`~nucstudy.common.io`), the
checking of values against type hints, so that a bad setting is named in one sentence
(:mod:`~nucstudy.common.validation`), and the class votes of an object's pixels
(:mod:`~nucstudy.common.votes`). Imports nothing of nucstudy.
"""
