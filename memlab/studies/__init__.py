"""Studies: experiments that train models, apply measures, and write tables and a report."""
