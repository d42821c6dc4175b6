"""Lightning callbacks that apply the post-processing functions and write results."""
