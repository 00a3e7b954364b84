"""Colour versus shape: a native env where the rewarded object's colour and shape part out of distribution."""
