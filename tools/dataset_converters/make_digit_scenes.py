"""Generate the digit-scenes demo data.

Usage: python tools/dataset_converters/make_digit_scenes.py ROOT
"""
import argparse
import time

from mmseg_infobatch.demo import ensure_digit_scenes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('root', nargs='?', default='data/digit_scenes')
    parser.add_argument('--num-train', type=int, default=1000)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument(
        '--digit-size',
        type=int,
        nargs=2,
        default=(16, 26),
        metavar=('MIN', 'MAX'),
        help='side of an upscaled digit in pixels, drawn from [MIN, MAX]')
    parser.add_argument('--max-digits', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    # Every setting is passed explicitly, so that data made with other
    # settings (or older defaults) is regenerated rather than reused.
    meta = ensure_digit_scenes(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        size=args.size,
        digit_size=tuple(args.digit_size),
        max_digits=args.max_digits,
        seed=args.seed)
    print(f'digit scenes ready in {args.root} ({meta["num_train"]} train, '
          f'{meta["num_val"]} val, {meta["size"]}px) after '
          f'{time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
