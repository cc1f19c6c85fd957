"""`pushtune images build|list`: the Docker images attempts run in, one per profile's image."""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table

from jobs.train import images, profiles


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("images", help="build and list the Docker images attempts run in",
                              description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="images_command", metavar="{build,list}")
    commands.required = True

    build = commands.add_parser("build", help="build the images (default: all of them)")
    build.add_argument("kinds", nargs="*", metavar="IMAGE",
                       help=f"an image ({', '.join(images.IMAGES)}), or the profile whose image "
                            f"to build ({', '.join(profiles.names())})")
    build.add_argument("--offline", action="store_true",
                       help=f"from the local {images.OFFLINE_BASE_IMAGE} and a host-side wheelhouse")
    build.add_argument("--base-image", metavar="IMG", help="base image (default: "
                       f"{images.ONLINE_BASE_IMAGE}, or {images.OFFLINE_BASE_IMAGE} with --offline)")
    build.add_argument("--no-cache", action="store_true", help="do not use Docker's layer cache")
    build.set_defaults(func=build_images)

    listing = commands.add_parser("list", help="show pushtune's images in the local engine")
    listing.set_defaults(func=list_images)


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def build_images(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(images.image_name(which) for which in args.kinds or images.IMAGES))
    client = images.connect(timeout=None)
    for name in names:  # once each, in the order given
        started = time.monotonic()
        tag = images.build_image(name, client=client, offline=args.offline,
                                 base_image=args.base_image, no_cache=args.no_cache, echo=_echo)
        print(f"built {tag} in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def list_images(args: argparse.Namespace) -> int:
    found = images.list_images()
    console = Console(highlight=False, width=max(Console().width, 120))
    if not found:
        console.print("no pushtune images (build them with `pushtune images build`)")
        return 0
    table = Table()
    for column in ("image", "profiles", "tag", "size", "created", "current"):
        table.add_column(column)
    for info in found:
        table.add_row(info.image, info.profiles, info.tag, f"{info.size / 1e6:.0f} MB", info.created,
                      "yes" if info.current else "no (rebuild)")
    console.print(table)
    return 0
