"""Reading, generating, preparing and loading challenge-layout data."""
