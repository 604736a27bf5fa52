"""Review-like synthetic sentences for training tests: filler words around two sentiment words of one label,
so a model has something learnable (and a classifier a signal) in a few steps."""
WORDS = {0: "bad awful dull boring terrible weak", 1: "good great fine lovely wonderful strong"}
FILLER = "the movie film story plot was is a an and of it this that very quite rather".split()


def sentence(rng, label):
    pool = WORDS[label].split()
    words = list(rng.choice(FILLER, 5)) + [rng.choice(pool)] + list(rng.choice(FILLER, 3)) + [rng.choice(pool)]
    return " ".join(words)
