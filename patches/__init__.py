"""The codemod series: one module per codemod, named after it; ``series`` gives the order.

Each module's docstring says which upstream shapes its codemod recognises, what it emits
for each, and why the vacc compiler needs it.  ``companion/`` holds files shipped beside
every output as they are.
"""
