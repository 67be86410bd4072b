"""What only training runs (pandas, scipy): reading and cleaning files, the item-item table, the SVD, publishing."""
