"""Critical pathways: graph surgery that inserts masks, contribution taps and gates after the
ReLU family (`surgery`), the masked network and its statistics (`network`), the percentile
selection of a pathway (`selection`) and learned gates (`learned_gates`). Imports `engine`,
`autodiff` and below."""
