"""A stand-in tokenizer for tiny random models in the generation tests."""


class ByteTokenizer:
    """One token per byte (id = byte + 1), id 0 = EOS."""

    eos_ids = frozenset({0})

    def encode(
        self, text: str, add_special_tokens: bool = True, parse_special: bool = True
    ) -> list[int]:
        return [b + 1 for b in text.encode()]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return bytes(max(i - 1, 0) % 256 for i in ids if i != 0).decode("utf-8", "replace")
