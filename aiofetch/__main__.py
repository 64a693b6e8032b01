"""python -m aiofetch"""

from .cli import main

main()
