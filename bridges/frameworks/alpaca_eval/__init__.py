"""AlpacaEval: `bridge` writes outputs and annotator configs and runs `alpaca_eval`."""
