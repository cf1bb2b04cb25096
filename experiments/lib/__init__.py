"""What the experiment scripts share: the runs of each experiment (`runs`), the backprop baselines
(`baselines`), drawing run logs (`plot`), the command line (`cli`), the measurement protocol
(`protocol`), the ResNet comparison (`resnet`) and the fine-tuning study (`finetune_models`,
`finetune_methods`, `finetune_report`)."""
