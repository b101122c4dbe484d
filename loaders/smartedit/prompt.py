"""SmartEdit's conversation prompt, built exactly as the reference's `get_prompt_embedding_LLM`.

Sources (TencentARC/SmartEdit at a65f126): `conversation_v01.py` template "vicuna_v1.3" (separator style
ADD_COLON_TWO, sep " ", roles USER/ASSISTANT) and `data/ConversationTemplateEditing_use.txt` (30
Human/GPT pairs; the reference picks one with an unseeded `random.choice`, we pick it from the seed).
"""

from __future__ import annotations

import random

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant can generate <img>. "
    "The assistant needs to conduct the image to image translation task based on given image and text information. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ROLES = ("USER", "ASSISTANT")
IMAGE_SLOT = "<im_start> <img_0> <im_end>"  # the <img_0> placeholder is replaced by the CLIP patch embeddings

# (Human, GPT) lines of data/ConversationTemplateEditing_use.txt, in file order, stripped, prefixes removed.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ('Could you produce an image based on the previous image and text description [cap]?', 'Certainly, I can create the image you requested [img].'),
    ('Please generate an image that corresponds to the previous image and text description [cap].', "Sure, I can generate the image you're looking for [img]."),
    ('Can you create an image that represents the previous image and text description [cap]?', 'Of course, I have created the image you requested [img].'),
    ("I'm looking for a new image that matches the conditional image and caption [cap].", 'Understood, the image you need is [img].'),
    ('Please provide me with an image that corresponds to the conditional image and caption [cap].', 'Sure, here is the image that corresponds to the conditional image and caption [img].'),
    ('Could you create an image that matches the conditional image and caption [cap]?', 'Absolutely, I have created the image that matches the conditional image and caption [img].'),
    ('Can you make a visual based on the prior image and caption [cap]?', 'Yes, I can make the visual you requested [img].'),
    ('Please generate a visual that corresponds to the prior image and caption [cap].', "Of course, I can generate the visual you're looking for [img]."),
    ('I need an image that represents the prior image and caption [cap]. Can you create it?', 'Certainly, I have created the image that represents the prior image and caption [img].'),
    ('Please provide me with an image that depicts the former image and concept [cap].', 'Sure, here is the image that depicts the former image and concept [img].'),
    ('Can you create an image that represents the former image and concept [cap]?', 'Absolutely, I have created the image that represents the former image and concept [img].'),
    ("I'm looking for an image that captures the former image and concept [cap]. Can you make it?", 'Yes, I have created the image that captures the former image and concept [img].'),
    ('Could you create a graphic that matches the earlier visual and description [cap]?', "Of course, I can create the matching graphic you're looking for [img]."),
    ('Please generate a graphic that corresponds to the earlier visual and description [cap].', 'Certainly, I can generate the graphic you requested [img].'),
    ('I need a graphic that goes with the earlier visual and description [cap]. Can you create it?', 'Yes, I have created the graphic that goes with the earlier visual and description [img].'),
    ('Can you design an image according to the older visual and idea [cap]?', 'Yes, I can design the image you requested [img].'),
    ('Please create an image that corresponds to the older visual and idea [cap].', "Sure, I can create the image you're looking for [img]."),
    ('I need an image that represents the older visual and idea [cap]. Can you design it?', 'Absolutely, I have designed the image that represents the older visual and idea [img].'),
    ('Please create a visual representation using the past graphic and theme [cap].', 'Understood, the visual representation you requested is [img].'),
    ('Can you generate a visual representation that uses the past graphic and theme [cap]?', 'Yes, I have generated the visual representation you requested [img].'),
    ("I'm looking for a visual representation that uses the past graphic and theme [cap]. Can you create it?", 'Certainly, I have created the visual representation you requested [img].'),
    ('Could you create an image that conveys the previous visual and notion of [cap]?', 'Of course, I have created the image that conveys the previous visual and notion you requested [img].'),
    ('Please generate an image that represents the previous visual and notion of [cap].', "Yes, I can generate the image you're looking for [img]."),
    ('I need an image that embodies the previous visual and notion of [cap]. Can you create it?', 'Certainly, I have created the image that embodies the previous visual and notion of [img].'),
    ('Can you create an image that embodies the preceding picture and idea [cap]?', 'Certainly, I have created the image that embodies the preceding picture and idea [img].'),
    ("I'm looking for an image that captures the preceding picture and idea [cap]. Can you generate it?", 'Yes, I have generated the image that captures the preceding picture and idea [img].'),
    ('Please provide me with an image that represents the preceding picture and idea [cap].', 'Of course, here is the image that represents the preceding picture and idea [img].'),
    ('Could you design a visual that captures the former picture and message [cap]?', 'Yes, I can design the visual that captures the former picture and message [img].'),
    ('Please generate a visual that represents the former picture and message [cap].', "Certainly, I can generate the visual you're looking for [img]."),
    ('I need a visual that embodies the former picture and message [cap]. Can you design it?', 'Of course, I have designed the visual that embodies the former picture and message [img].'),
)


def template_index_for_seed(seed: int) -> int:
    """The template the seed picks (the reference draws it with an unseeded random.choice)."""
    return random.Random(seed).randrange(len(TEMPLATES))


def resolve_template(template: int | str | None, seed: int) -> str:
    """Human line: None -> chosen by `seed`; int -> TEMPLATES[i] (0-based); str -> a custom line with [cap]."""
    if template is None:
        return TEMPLATES[template_index_for_seed(seed)][0]
    if isinstance(template, int):
        if not 0 <= template < len(TEMPLATES):
            raise ValueError(f"template index {template} outside 0..{len(TEMPLATES) - 1}")
        return TEMPLATES[template][0]
    if "[cap]" not in template:
        raise ValueError("a custom template must contain [cap], where the quoted instruction goes")
    return template


def build_prompt(instruction: str, human_template: str) -> str:
    """The conversation string the reference tokenises.

    `"<im_start> <img_0> <im_end>" + instruction` in double quotes replaces [cap]; prompt = system + " " +
    "USER: " + human + " " + "ASSISTANT:"; then every newline is deleted.
    """
    edited = IMAGE_SLOT + instruction
    human = human_template.replace("[cap]", f'"{edited}"')
    conversation = f"{SYSTEM} {ROLES[0]}: {human} {ROLES[1]}:"
    return conversation.replace("\n", "")
