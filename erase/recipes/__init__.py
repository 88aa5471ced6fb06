"""The toy world's recipes: training it from nothing (``train``), retraining it without a concept or
some samples to get its oracles (``oracle``), measuring how well it draws (``quality``), and seed
003's descent-ascent case (``seed003``). The world itself (data, tokenizer, nets, weights) is
``erase.toy``, which the core modules read; these recipes sit above them."""
