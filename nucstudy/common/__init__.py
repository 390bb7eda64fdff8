"""Helpers every layer may use: atomic file writes (:mod:`~nucstudy.common.io`) and the
checking of values against type hints, so that a bad setting is named in one sentence
(:mod:`~nucstudy.common.validation`). Imports nothing of nucstudy.
"""
