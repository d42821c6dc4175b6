"""Report images, result files and the HTML report."""
