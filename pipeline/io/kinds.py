"""What kind of document a file name is: source code (rendered in the `code` style) or text.

Shared by the corpus readers (pipeline.corpus.sources) and the one-shard readers (pipeline.io.readers),
which import it and not each other.
"""

from __future__ import annotations

from pathlib import PurePosixPath

CODE_EXTENSIONS = frozenset({
    ".py", ".js", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".scala", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".cs", ".rb", ".php", ".swift", ".m", ".sh", ".bash", ".sql", ".r", ".jl", ".lua", ".pl", ".hs",
    ".ml", ".css", ".html", ".xml", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".json", ".ipynb", ".proto",
})
TEXT_EXTENSIONS = frozenset({".txt", ".md", ".rst", ".tex", ".text"}) | CODE_EXTENSIONS


def kind_of(name: str) -> str:
    """
    >>> kind_of("src/main.rs"), kind_of("notes.md")
    ('code', 'text')
    """
    return "code" if PurePosixPath(name).suffix.lower() in CODE_EXTENSIONS else "text"
