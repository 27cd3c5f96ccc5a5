"""detectors: windows of scored text in, typed insights out (Evidently underneath). Built by the Detectors issue."""
