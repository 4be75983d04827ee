"""What-if replay: recorded leads and bids through a candidate configuration, offline."""
