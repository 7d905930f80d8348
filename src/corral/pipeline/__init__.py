"""The refresh pipeline: retrain, gate, canary, promote or roll back, retire."""
