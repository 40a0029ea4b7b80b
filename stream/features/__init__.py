"""Stage 2, file → features (the science): recognise the kind of a file, read SMASS-style spectra and
TESS light curves, resample spectra, search light curves for transits and build the model views."""
