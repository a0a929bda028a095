import sys

from experiments.tables import main

main(sys.argv[1:])
