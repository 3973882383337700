"""The offline bundle: every .deb, wheel, model file and binary a site needs, signed, in one archive.

build (on a connected machine) -> verify -> import into a site -> `aicc install` serves its apt
repository to the hosts over HTTPS and copies wheels and models from it. Nothing else is fetched.
"""
