"""A plain line-by-line Python implementation of the augmentation job, for comparison with PyITA.

This is how a typical script (and the seed paper's program) does it: read every XSF listed in generate.in
into lists with str.split, compute E' = E - F.D for each displacement, write each new file line by line,
then write a generate.in listing parents and derived files. It is written plainly, not slowed down on
purpose, and it does no input checking beyond what Python does by itself.

    python benchmarks/naive_augment.py generate.in OUT --a 4 --delta 0.03 --strategy balanced --seed 0
"""

import argparse
import os
import random


def read_generate_in(path):
    header = []
    files = []
    with open(path) as f:
        lines = f.readlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "FILES":
            count = int(lines[i + 1].split()[0])
            for j in range(i + 2, i + 2 + count):
                files.append(lines[j].strip())
            break
        header.append(line)
        i += 1
    folder = os.path.dirname(path)
    return header, [os.path.join(folder, name) for name in files]


def read_xsf(path):
    energy = None
    cell = []
    symbols = []
    positions = []
    forces = []
    with open(path) as f:
        lines = f.readlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "total energy" in line:
            energy = float(line.split("=")[1].split()[0])
        elif line.strip() == "PRIMVEC":
            for k in range(3):
                cell.append([float(x) for x in lines[i + 1 + k].split()])
            i += 3
        elif line.strip() == "PRIMCOORD":
            n = int(lines[i + 1].split()[0])
            for k in range(n):
                parts = lines[i + 2 + k].split()
                symbols.append(parts[0])
                positions.append([float(parts[1]), float(parts[2]), float(parts[3])])
                forces.append([float(parts[4]), float(parts[5]), float(parts[6])])
            break
        i += 1
    return {"path": path, "energy": energy, "cell": cell, "symbols": symbols,
            "positions": positions, "forces": forces}


def write_xsf(path, parent, positions, energy, comment):
    with open(path, "w") as f:
        f.write("# total energy = %.10f eV\n" % energy)
        f.write("# %s\n" % comment)
        f.write("\n")
        f.write("CRYSTAL\n")
        f.write("PRIMVEC\n")
        for row in parent["cell"]:
            f.write(" %18.10f %18.10f %18.10f\n" % (row[0], row[1], row[2]))
        f.write("PRIMCOORD\n")
        f.write("%d 1\n" % len(parent["symbols"]))
        for k in range(len(parent["symbols"])):
            p = positions[k]
            F = parent["forces"][k]
            f.write("%-3s %18.10f %18.10f %18.10f %18.10f %18.10f %18.10f\n"
                    % (parent["symbols"][k], p[0], p[1], p[2], F[0], F[1], F[2]))


DIRECTIONS = [(0, 1.0, "+x"), (1, 1.0, "+y"), (2, 1.0, "+z"), (0, -1.0, "-x"), (1, -1.0, "-y"), (2, -1.0, "-z")]


def make_derived(parent, atom, direction, delta):
    axis, sign, name = DIRECTIONS[direction]
    positions = [list(p) for p in parent["positions"]]
    positions[atom][axis] += sign * delta
    energy = parent["energy"] - sign * delta * parent["forces"][atom][axis]
    comment = "derived from %s atom %d %s delta %g" % (parent["path"], atom + 1, name, delta)
    return positions, energy, comment


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("generate_in")
    parser.add_argument("out")
    parser.add_argument("--a", type=int, required=True)
    parser.add_argument("--delta", type=float, required=True)
    parser.add_argument("--strategy", default="balanced", choices=["sequential", "balanced"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    header, files = read_generate_in(args.generate_in)
    parents = [read_xsf(path) for path in files]
    os.makedirs(os.path.join(args.out, "derived"))
    written = []
    total = args.a * len(parents)

    if args.strategy == "sequential":
        count = 0
        for p, parent in enumerate(parents):
            for atom in range(len(parent["symbols"])):
                for direction in range(6):
                    if count >= total:
                        break
                    positions, energy, comment = make_derived(parent, atom, direction, args.delta)
                    name = "derived/s%05d-t%03d.xsf" % (p + 1, count + 1)
                    write_xsf(os.path.join(args.out, name), parent, positions, energy, comment)
                    written.append(name)
                    count += 1
    else:
        rng = random.Random(args.seed)
        for p, parent in enumerate(parents):
            pairs = [(atom, direction) for atom in range(len(parent["symbols"])) for direction in range(6)]
            for copy, (atom, direction) in enumerate(rng.sample(pairs, min(args.a, len(pairs)))):
                positions, energy, comment = make_derived(parent, atom, direction, args.delta)
                name = "derived/s%05d-t%03d.xsf" % (p + 1, copy + 1)
                write_xsf(os.path.join(args.out, name), parent, positions, energy, comment)
                written.append(name)

    out_abs = os.path.abspath(args.out)
    with open(os.path.join(args.out, "generate.in"), "w") as f:
        for line in header:
            f.write(line)
        f.write("FILES\n")
        f.write("%d\n" % (len(files) + len(written)))
        for path in files:
            f.write(os.path.relpath(os.path.abspath(path), out_abs) + "\n")
        for name in written:
            f.write(name + "\n")
    print("%d derived structures from %d parents" % (len(written), len(parents)))


if __name__ == "__main__":
    main()
