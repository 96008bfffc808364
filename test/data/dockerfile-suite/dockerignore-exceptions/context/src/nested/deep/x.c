deepc
