"""Tables, plots and reports built from results.json records."""
