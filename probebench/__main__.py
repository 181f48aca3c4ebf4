"""`python -m probebench`, which is how torchrun starts each process: `torchrun ... -m probebench extract`."""

from probebench.cli import main

main()
