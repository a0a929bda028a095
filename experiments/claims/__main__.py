import sys

from experiments.claims.ledger import main

main(sys.argv[1:])
