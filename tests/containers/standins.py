"""Stand-ins for the base images that `Dockerfile` and `docker-compose.yml` name.

No image registry is reachable where TCPie is tested, so nothing can be pulled. Each base
image is replaced by one built here from Debian packages and tagged with exactly the name
the files use, so both files run unchanged. What each stand-in holds is written below, next
to the image it replaces; README.md ("What was run and what was only validated") repeats it.

- The Rust builder: a `debootstrap --variant=minbase` bookworm tree with gcc and libc6-dev,
  this machine's own Rust toolchain (no other can be fetched) where the official image keeps
  it, and this machine's CA bundle, so cargo can reach the crate registry from inside a build.
- The runtime (distroless `cc`): glibc's shared libraries, libgcc_s, the CA bundle, `nonroot`
  (65532) in /etc/passwd and /etc/group, /tmp, /home/nonroot. No shell and nothing else, so a
  Dockerfile that needs more fails here as it would for real.
- Prometheus and Alertmanager: Debian's binaries with the libraries they link, on a busybox
  (as the official images are: their healthchecks use busybox's `wget`), run as `nobody`.
- busybox: Debian's `busybox-static` with a link for each applet.
- Redis: Debian's `redis-server` with the libraries it links, run as `redis` (999), as the
  official image does.

A stand-in is rebuilt only when its recipe changes: its key (this file, the versions of the
Debian packages and of the toolchain it takes) is a label on the image.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Fixed paths outside the checkout, so that a later run on this machine reuses them.
CACHE = Path(os.environ.get("TCPIE_CONTAINER_CACHE", "/var/cache/tcpie-containers"))
LABEL = "org.tcpie.standin.key"
SUITE = "bookworm"
ARCH_LIBS = "/lib/x86_64-linux-gnu"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def package_version(package: str) -> str:
    return sh("dpkg-query", "-W", "-f=${Version}", package).stdout


def package_files(package: str) -> list[str]:
    return sh("dpkg-query", "-L", package).stdout.split()


def rust_version() -> str:
    return sh("rustc", "-V").stdout.split()[1]


def mirror() -> str:
    """The Debian mirror of this machine's apt sources (never written into the repository)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"(?:^deb\s+|^URIs:\s*)(\S*/debian)/?\s", text, re.M):
            return m.group(1)
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list{,.d}")


# --- building an image from a list of files ---------------------------------------------


class Tree:
    """The files of an image, written as a tar stream for `docker import`."""

    def __init__(self, out: tarfile.TarFile):
        self.tar = out
        self.added: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
        info.mtime = 0
        return info

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        parts = Path(path).parts[1:]
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            if sub in self.added:
                continue
            last = i == len(parts)
            self.tar.addfile(self._info(sub, tarfile.DIRTYPE, mode if last else 0o755, uid if last else 0, gid if last else 0))
            self.added.add(sub)

    def text(self, path: str, content: str, mode: int = 0o644) -> None:
        self.dir(str(Path(path).parent))
        data = content.encode()
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        self.added.add(path)

    def link(self, path: str, target: str) -> None:
        if path in self.added:
            return
        self.dir(str(Path(path).parent))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)
        self.added.add(path)

    def host(self, source: str | Path, path: str | None = None, root: Path = Path("/")) -> None:
        """Copies a file (or symlink, followed to its target too) from `root` as `path`."""
        source = str(source)
        path = path or source
        if path in self.added:
            return
        real = root / source.lstrip("/")
        self.dir(str(Path(path).parent))
        if real.is_symlink():
            target = os.readlink(real)
            self.link(path, target)
            resolved = os.path.normpath(os.path.join(os.path.dirname(source), target))
            self.host(resolved, os.path.normpath(os.path.join(os.path.dirname(path), target)), root)
            return
        info = self.tar.gettarinfo(str(real), arcname=path.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with open(real, "rb") as f:
            self.tar.addfile(info, f)
        self.added.add(path)

    def copytree(self, source: Path, path: str) -> None:
        """Copies a whole folder of this machine to `path`."""
        self.dir(path)
        for dirpath, dirnames, filenames in os.walk(source):
            rel = os.path.relpath(dirpath, source)
            base = path if rel == "." else f"{path}/{rel}"
            for d in sorted(dirnames):
                full = Path(dirpath) / d
                if full.is_symlink():
                    self.link(f"{base}/{d}", os.readlink(full))
                else:
                    self.dir(f"{base}/{d}")
            for f in sorted(filenames):
                full = Path(dirpath) / f
                if full.is_symlink():
                    self.link(f"{base}/{f}", os.readlink(full))
                else:
                    self.host(full, f"{base}/{f}")

    def merged_usr(self) -> None:
        """Debian 12's layout: /lib, /lib64, /bin and /sbin link into /usr."""
        for top in ("bin", "lib", "lib64", "sbin"):
            self.dir(f"/usr/{top}")
            self.link(f"/{top}", f"usr/{top}")

    def glibc(self) -> None:
        self.merged_usr()
        for f in package_files("libc6"):
            if f.startswith(ARCH_LIBS) and ".so" in f:
                self.host(f, "/usr" + f)
        self.link("/usr/lib64/ld-linux-x86-64.so.2", f"{ARCH_LIBS}/ld-linux-x86-64.so.2")
        self.text("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")

    def linked_libraries(self, binary: str) -> None:
        """The shared libraries `binary` links, as this machine resolves them."""
        for line in sh("ldd", binary).stdout.splitlines():
            m = re.search(r"=> (/\S+)", line)
            if m:
                lib = m.group(1)
                self.host(lib, "/usr" + lib if lib.startswith("/lib/") else lib)

    def users(self, extra: list[tuple[str, int]]) -> None:
        users = [("root", 0, "/root")] + [(n, i, f"/home/{n}") for n, i in extra] + [("nobody", 65534, "/nonexistent")]
        self.text("/etc/passwd", "".join(f"{n}:x:{i}:{i}:{n}:{h}:/sbin/nologin\n" for n, i, h in users))
        self.text("/etc/group", "".join(f"{n}:x:{i}:\n" for n, i, _ in users))
        for name, uid in extra:
            self.dir(f"/home/{name}", 0o700, uid, uid)
        self.dir("/tmp", 0o1777)

    def busybox(self) -> None:
        self.merged_usr()
        self.host("/bin/busybox", "/usr/bin/busybox")
        for applet in sh("/bin/busybox", "--list").stdout.split():
            if applet != "busybox":
                self.link(f"/usr/bin/{applet}", "busybox")


@dataclass
class Recipe:
    """How one stand-in is made: the inputs of its key, its files and its image settings."""

    kind: str
    inputs: list[str]
    build: callable
    changes: list[str] = field(default_factory=list)


def debootstrap_tree() -> Path:
    """A minbase bookworm tree with gcc and libc6-dev, made once and kept in CACHE."""
    include = "gcc,libc6-dev,ca-certificates"
    key = hashlib.sha256(f"{SUITE} {include}".encode()).hexdigest()[:16]
    tree = CACHE / f"bookworm-{key}"
    if (tree / ".complete").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"  debootstrap {SUITE} into {tree} (once; about a minute)", flush=True)
    sh("debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(tree), mirror())
    (tree / ".complete").write_text("")
    print(f"  debootstrap: {time.monotonic() - started:.0f} s", flush=True)
    return tree


def rust_builder(t: Tree) -> None:
    tree = debootstrap_tree()
    # The machine's CA bundle, in place of Debian's: the crate registry is reached through
    # a proxy that Debian's stock bundle does not trust. Added first, so the tree's is skipped.
    t.host(HOST_CA_BUNDLE, "/etc/ssl/certs/ca-certificates.crt")
    for entry in sorted(tree.iterdir()):
        if entry.name in ("proc", "sys", "dev", ".complete"):
            continue
        if entry.is_symlink():
            t.link(f"/{entry.name}", os.readlink(entry))
        elif entry.is_dir():
            t.copytree(entry, f"/{entry.name}")
        else:
            t.host(entry, f"/{entry.name}")
    for d in ("/proc", "/sys", "/dev"):
        t.dir(d)
    sysroot = Path(sh("rustc", "--print", "sysroot").stdout.strip())
    toolchain = f"/usr/local/rustup/toolchains/{rust_version()}-x86_64-unknown-linux-gnu"
    t.copytree(sysroot / "bin", f"{toolchain}/bin")
    t.copytree(sysroot / "lib", f"{toolchain}/lib")
    for tool in sorted(os.listdir(sysroot / "bin")):
        t.link(f"/usr/local/cargo/bin/{tool}", f"{toolchain}/bin/{tool}")
    t.dir("/usr/local/cargo/registry", 0o777)


def distroless_cc(t: Tree) -> None:
    t.glibc()
    for f in package_files("libgcc-s1"):
        if ".so" in f:
            t.host(f, "/usr" + f if f.startswith("/lib/") else f)
    t.host(HOST_CA_BUNDLE, "/etc/ssl/certs/ca-certificates.crt")
    t.users([("nonroot", 65532)])


def monitoring(package: str, binary: str, name: str, workdir: str):
    def build(t: Tree) -> None:
        t.busybox()
        t.glibc()
        t.linked_libraries(binary)
        t.host(binary, f"/bin/{name}")
        # Debian's builds read their templates and web assets from /usr/share/prometheus.
        for f in package_files(package):
            if f.startswith("/usr/share/prometheus/") and Path(f).is_file():
                t.host(f)
        t.users([])
        t.dir(workdir, 0o775, 65534, 65534)
        t.dir(f"/etc/{name}")
        t.host(HOST_CA_BUNDLE, "/etc/ssl/certs/ca-certificates.crt")

    return build


def busybox(t: Tree) -> None:
    t.busybox()
    t.users([])


def redis(t: Tree) -> None:
    t.glibc()
    t.linked_libraries("/usr/bin/redis-server")
    t.host("/usr/bin/redis-server", "/usr/local/bin/redis-server")
    t.users([("redis", 999)])
    t.dir("/data", 0o755, 999, 999)


def recipe_for(image: str) -> Recipe:
    """The recipe of an image name as the Dockerfile or the compose file spells it."""
    if m := re.fullmatch(r"rust:(\d+\.\d+\.\d+)-slim-bookworm", image):
        if m.group(1) != rust_version():
            raise RuntimeError(
                f"{image}: the Dockerfile pins Rust {m.group(1)}, this machine's toolchain is "
                f"{rust_version()}; the stand-in can only hold the machine's"
            )
        return Recipe(
            "rust builder",
            [rust_version(), package_version("ca-certificates")],
            rust_builder,
            [
                "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV RUSTUP_HOME=/usr/local/rustup",
                "ENV CARGO_HOME=/usr/local/cargo",
            ],
        )
    if re.fullmatch(r"gcr\.io/distroless/cc-debian12:nonroot", image):
        return Recipe(
            "runtime",
            [package_version("libc6"), package_version("libgcc-s1")],
            distroless_cc,
            ["USER 65532:65532", "WORKDIR /home/nonroot"],
        )
    if re.fullmatch(r"prom/prometheus:v[\d.]+", image):
        return Recipe(
            "prometheus",
            ["/usr/bin/prometheus", package_version("prometheus"), package_version("busybox-static"), package_version("libc6")],
            monitoring("prometheus", "/usr/bin/prometheus", "prometheus", "/prometheus"),
            [
                "USER nobody",
                "WORKDIR /prometheus",
                'ENTRYPOINT ["/bin/prometheus"]',
                'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]',
            ],
        )
    if re.fullmatch(r"prom/alertmanager:v[\d.]+", image):
        return Recipe(
            "alertmanager",
            ["/usr/bin/prometheus-alertmanager", package_version("prometheus-alertmanager"), package_version("busybox-static"), package_version("libc6")],
            monitoring("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "alertmanager", "/alertmanager"),
            [
                "USER nobody",
                "WORKDIR /alertmanager",
                'ENTRYPOINT ["/bin/alertmanager"]',
                'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]',
            ],
        )
    if re.fullmatch(r"busybox:[\d.]+", image):
        return Recipe("busybox", [package_version("busybox-static")], busybox, ['CMD ["sh"]'])
    if re.fullmatch(r"redis:[\d.]+(-\w+)?", image):
        return Recipe(
            "redis",
            [package_version("redis-server"), package_version("libc6")],
            redis,
            ["USER redis", "WORKDIR /data", 'ENTRYPOINT ["/usr/local/bin/redis-server"]', "EXPOSE 6379"],
        )
    raise KeyError(f"no stand-in recipe for {image}: add one to tests/containers/standins.py")


def key(image: str, recipe: Recipe) -> str:
    """What the stand-in is made of: its own recipe's code and inputs, and the file writer's
    code, so that changing one recipe does not rebuild the others."""
    code = [inspect.getsource(Tree), inspect.getsource(recipe.build)]
    if recipe.build is rust_builder:
        code.append(inspect.getsource(debootstrap_tree))
    text = "\n".join([*code, image, *recipe.inputs, *recipe.changes])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def has_recipe(image: str) -> bool:
    try:
        recipe_for(image)
    except KeyError:
        return False
    return True


def current_key(docker: list[str], image: str, env: dict | None) -> str | None:
    r = subprocess.run(
        [*docker, "image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', image],
        capture_output=True,
        text=True,
        env=env,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def build(docker: list[str], image: str, env: dict | None = None) -> bool:
    """Makes the stand-in for `image` unless an up-to-date one exists; True if it built."""
    recipe = recipe_for(image)
    k = key(image, recipe)
    if current_key(docker, image, env) == k:
        return False
    started = time.monotonic()
    changes = [*recipe.changes, f"LABEL {LABEL}={k}", f"LABEL org.tcpie.standin.kind=\"{recipe.kind}\""]
    cmd = [*docker, "import"]
    for c in changes:
        cmd += ["--change", c]
    cmd += ["-", image]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as out:
            recipe.build(Tree(out))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # docker import stopped reading: its error is reported below
    if proc.wait() != 0:
        raise RuntimeError(f"docker import of {image} failed: {proc.stderr.read().decode()}")
    print(f"  stand-in {image} ({recipe.kind}): built in {time.monotonic() - started:.0f} s", flush=True)
    return True


def base_images() -> list[str]:
    """Every image `Dockerfile` builds from and `docker-compose.yml` runs, but our own."""
    import yaml

    names = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    built = {s.get("image") for s in compose["services"].values() if "build" in s}
    names += [s["image"] for s in compose["services"].values() if "image" in s and s["image"] not in built]
    seen = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


if __name__ == "__main__":
    # By hand: `DOCKER_HOST=unix:///run/tcpie-containers/docker.sock python standins.py [IMAGE...]`
    for image in sys.argv[1:] or [i for i in base_images() if has_recipe(i)]:
        build(["docker"], image)
