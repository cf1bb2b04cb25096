"""What the experiment scripts share: the runs of each experiment (`runs`), the backprop baselines
(`baselines`), drawing run logs (`plot`), the command line (`cli`), the measurement protocol
(`protocol`) and the ResNet comparison (`resnet`)."""
