"""Job kinds, one module each: a record type (typed params and result) and a runner (`JobKind`)."""
